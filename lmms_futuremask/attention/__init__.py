"""The attention core: the mask family, its transformers integration, fast kernels (torch + transformers only)."""

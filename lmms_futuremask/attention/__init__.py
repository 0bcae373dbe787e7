"""The attention core: the mask family, its transformers integration and the fast kernels (torch + transformers only)."""

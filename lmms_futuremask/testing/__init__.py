"""Testing kit: tiny random checkpoints of VLM families and synthetic tasks, built offline in seconds."""

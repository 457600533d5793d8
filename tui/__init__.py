"""The gpuctl Textual control center."""

"""What is inside a .tflite file, read without a runtime: the flatbuffer reader, which runtime can load
it (compat + its op-version table), and the per-layer comparison of two variants."""

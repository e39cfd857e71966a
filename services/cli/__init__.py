"""The `trellis` command line and the embedded launcher (`trellis up`)."""

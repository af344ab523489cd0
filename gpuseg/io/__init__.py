"""Files in and out: table reading (one file-type dispatch) and atomic writes."""

"""Video platforms a stream can run on (see base.py): builtin, mux, ivs."""

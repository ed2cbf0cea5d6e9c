"""Plain nn.Modules: text tower (transformers), image tower (open_clip), fusion, ArcFace head, cross-encoder."""

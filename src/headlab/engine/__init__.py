"""The engine: one attention function for every call headlab touches (path selection, chunked
eager loop, GQA), its dense reference, masks, the per-call context, site addressing and
``attach`` (transformers' AttentionInterface). Everything else in headlab builds on this layer;
it imports nothing from the layers above it."""

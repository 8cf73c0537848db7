"""Phase 1 of DisCL: hard samples -> prompts -> image-guided generation -> CLIP scores and filter."""

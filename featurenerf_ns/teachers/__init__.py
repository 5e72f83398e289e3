"""2D teacher networks whose features FeatureNeRF distills (DINOv2 ViT, ...)."""

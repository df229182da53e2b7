"""dmha: Double Multi-Head Attention multimodal speech emotion recognition."""

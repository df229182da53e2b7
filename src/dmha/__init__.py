"""dmha: Double Multi-Head Attention multimodal speech emotion recognition."""
__version__ = "0.1.0"

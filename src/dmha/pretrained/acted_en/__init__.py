"""The bundled model dmha-acted-en (see MODEL_CARD.md)."""

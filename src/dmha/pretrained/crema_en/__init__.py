"""The bundled model dmha-crema-en (see MODEL_CARD.md)."""

"""Spiking language models as Hugging Face models."""

"""Inspection: what the gateway learns about a request before it decides where to send it.

``encoder`` turns prompts into sentence vectors (all-MiniLM-L6-v2, int8 ONNX, no PyTorch), shared by every
stage that needs one. Nothing here loads a model at import: the app's lifespan builds the encoder once.
"""

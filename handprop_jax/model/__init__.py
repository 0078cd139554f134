"""HandProp model: encoder (ResNet-18), heads, the HandProp module, inference functions."""

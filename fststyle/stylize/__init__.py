"""Stylise with a trained model: the Stylizer, the plan of inputs, its runner, one class per input kind,
temporal smoothing and the exporters."""

"""The networks: the one Johnson transformation network, its config and style blends, and the frozen VGG."""

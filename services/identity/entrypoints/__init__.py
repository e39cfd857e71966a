"""How identity is reached and started: the gRPC servicer, its settings, main."""

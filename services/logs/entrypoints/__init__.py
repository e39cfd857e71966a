"""How the logs service is reached and started: the gRPC servicer, its settings group, main."""

"""The HTTP edge for partners: authentication, limits, routes, proxying and request logging."""

"""QA > Integration API Logs: the request grid, one request, exports and the chart."""

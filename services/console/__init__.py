"""The web console: Trellis for administrators in a browser (docs/console.md).

A client of the four gRPC services and nothing more: every page calls them as the signed-in
user, with that user's actor token, so organisation isolation, permissions and separation of
duties are decided by the services. It owns only sign-in sessions (a JetStream key-value
bucket). Server-rendered HTML (Starlette + Jinja2), htmx for partial updates.

    entrypoints/     main.py: bootstrap(settings) -> RunningConsole, `python -m services.console`;
                     settings.py: the console's settings group and what the process reads
    app.py           the Starlette application: routes, middleware, templates
    web.py           page security (CSP, CSRF, cookies, return URLs), rendering, request ids
    sessions.py      sessions and pending sign-ins in JetStream key-value buckets
    signin/          OpenID Connect sign-in (production) and the local sign-in (embedded)
    peers.py         gRPC channels, and stubs that call as the signed-in user
    errors.py        the one place a gRPC error becomes what a page says
    area.py          what the pages of an area share (the user's stubs, forms, refusals)
    formats.py       times, counts and durations as pages show them; dates typed into filters
    integrations/    Administration > Integrations
    webhooks/        Administration > Webhooks: subscriptions, delivery logs, tests, secrets
    logs/            QA > Integration API Logs: the grid, one request, exports, the chart
    audit/           the audit trail, its chain check and signed checkpoint
    review/          the quarterly access review, its CSV and printable page
"""

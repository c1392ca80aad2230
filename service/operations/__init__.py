"""The service layer: what the JSON routes and the pages both do, without HTTP.

``uploads`` (receive, validate, store and enqueue an adapter, or find the existing job or report),
``jobs`` (the queue: enqueue with dedupe and quotas, a job's public status), ``reports`` (stored
reports, the recent-reports listing, stored adapters), ``predictors`` (what the live workers
loaded) and ``webhooks`` (subscriptions and their delivery logs). Routes turn results into JSON
responses and pages into HTML; both raise and render the same :class:`service.error_handlers.Problem`.
"""

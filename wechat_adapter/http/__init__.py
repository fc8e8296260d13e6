"""The gateway's HTTP edge below the views: the request's gateway, caller and trace id, JSON bodies,
uploads, authentication, CORS, metrics and errors rendered as the API's error JSON.

Only the views and the composition root (`wechat_adapter.app`) import this package; the domain
modules (submission, enrolment, review, notifier, …) never see a request.
"""

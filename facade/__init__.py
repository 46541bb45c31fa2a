"""The public HTTP facade in front of TorchServe's sentiment model."""

from flask import Flask

from facade.context import MODEL_INFO_KEY, PREDICTOR_KEY, SETTINGS_KEY
from facade.errors import register_error_handlers
from facade.info import ModelInfo
from facade.predictor import TorchServeClient
from facade.settings import Settings


def create_app(settings=None, predictor=None, span_exporter=None) -> Flask:
    """Return the facade app; settings come from FACADE_* variables and the predictor is TorchServe's.

    span_exporter: where to put the spans instead of FACADE_OTLP_ENDPOINT (tests).
    """
    settings = settings or Settings.from_env()
    app = Flask(__name__, static_folder=None)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        MAX_FORM_MEMORY_SIZE=settings.max_body_bytes,
    )
    # Answer fields in the documented order (label, score, container_id), not sorted.
    app.json.sort_keys = False
    app.extensions[SETTINGS_KEY] = settings
    app.extensions[PREDICTOR_KEY] = predictor or TorchServeClient(settings)
    app.extensions[MODEL_INFO_KEY] = ModelInfo(settings.info_ttl_s)
    register_error_handlers(app)

    # Imported here, not at the top: prometheus_client must not be imported by the Gunicorn
    # master before gunicorn.conf.py has set PROMETHEUS_MULTIPROC_DIR (see facade/metrics.py).
    from facade import auth, tracing
    from facade.docs import bp as docs_bp
    from facade.observability import install
    from facade.routes import bp

    install(app)
    # After the metrics and log hooks: its span covers the request and ends after their log line.
    tracing.install(app, settings.otlp_endpoint, settings.container_id, span_exporter)
    auth.install(app, settings.api_keys_file)

    app.register_blueprint(bp)
    app.register_blueprint(docs_bp)
    return app

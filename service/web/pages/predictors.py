"""The predictors page: what the live workers loaded, with each predictor's validation figures."""

from __future__ import annotations

from fastapi import Request, Response

from service.operations.predictors import live_predictors, live_worker_count
from service.web.frame import PageSession, page_router, render, service_state
from service.web.views import predictor_rows

router = page_router()


@router.get("/predictors")
def predictors_page(request: Request, signed: PageSession) -> Response:
    session, _ = signed
    state = service_state(request)
    published, predictors = live_predictors(state.redis)
    workers = live_worker_count(state.redis)
    if workers == 0:
        worker_text = (
            "No worker is alive: uploads wait in the queue until one starts (loravet worker)."
        )
    else:
        worker_text = f"{workers} worker(s) alive; {published} published what they loaded."
    return render(
        request,
        "predictors.html",
        page="predictors",
        session=session,
        workers=workers,
        worker_text=worker_text,
        predictors=predictor_rows(predictors),
        empty_note=(
            "No predictor is loaded. Every adapter still gets the static checks, and its verdict is "
            "review, because quality and harmful-finetune risk are unknown. Put predictor checkpoints "
            "in the workers' predictor directory (LORAVET_WORKER_PREDICTOR_DIR) and restart them."
        ),
    )

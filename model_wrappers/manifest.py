"""Entry point of the ``lmms_eval.models`` group: tells lmms-eval where ``llava_futuremask`` lives."""


def manifests():
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(
            model_id="llava_futuremask",
            simple_class_path="model_wrappers.llava_futuremask.LlavaFutureMask",
        )
    ]

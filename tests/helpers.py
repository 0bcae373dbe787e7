"""Shared helpers: images and prompts, a stock model fed an explicit mask (:mod:`tests.references`), decode loops."""

import os
import subprocess

import torch
from PIL import Image

from lmms_futuremask.runtime.continuation import position_ids_from

from .references import reference_mask

COLOURS = [(255, 0, 0), (0, 160, 0), (0, 0, 255), (250, 220, 0), (20, 20, 20)]


def images(n, offset=0):
    return [Image.new("RGB", (40 + 7 * i, 56), COLOURS[(i + offset) % len(COLOURS)]) for i in range(n)]


PROMPTS = [
    ("USER: <image>\nWhat colour is the image? ASSISTANT:", 1),
    ("USER: Compare <image> with <image> and answer with one word. ASSISTANT:", 2),
    ("USER: <image>\n<image>\n<image>\nWhich image is brighter? ASSISTANT:", 3),
]


def processor_inputs(processor, prompts):
    texts = [text for text, _ in prompts]
    imgs = [img for text, n in prompts for img in images(n, offset=len(text))]
    processor.tokenizer.padding_side = "left"
    return processor(text=texts, images=imgs, return_tensors="pt", padding=True)


def explicit_additive_mask(allowed, dtype=torch.float32):
    """A 4D additive mask as eager attention takes it: 0 where allowed, dtype-min elsewhere."""
    return torch.where(allowed, torch.tensor(0.0, dtype=dtype), torch.tensor(torch.finfo(dtype).min, dtype=dtype))


@torch.inference_mode()
def stock_prefill(stock_eager_model, inputs, mode):
    """Prefill a stock eager model with the mode's explicit additive mask; returns the model output."""
    is_visual = inputs["input_ids"] == stock_eager_model.config.image_token_id
    allowed = reference_mask(is_visual, mode, inputs["attention_mask"])
    # Padding query rows have no allowed key; open them so softmax stays finite (their outputs are never read).
    allowed = allowed | ~allowed.any(-1, keepdim=True)
    return stock_eager_model(
        input_ids=inputs["input_ids"],
        pixel_values=inputs["pixel_values"],
        attention_mask=explicit_additive_mask(allowed),
        position_ids=position_ids_from(inputs["attention_mask"]),
        use_cache=True,
    )


@torch.inference_mode()
def causal_decode(model, prefill, attention_mask, steps, eos_token_id=None):
    """Plain causal greedy decode steps through a prefill's cache; returns the tokens ``[B, n]`` (n <= steps)."""
    cache, mask = prefill.past_key_values, attention_mask
    token = prefill.logits[:, -1].argmax(-1)
    tokens = [token]
    while len(tokens) < steps and not (eos_token_id is not None and bool((token == eos_token_id).all())):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        step = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=position_ids_from(mask)[:, -1:],
            past_key_values=cache,
            use_cache=True,
        )
        cache, token = step.past_key_values, step.logits[:, -1].argmax(-1)
        tokens.append(token)
    return torch.stack(tokens, dim=1)


def manual_greedy(stock_eager_model, inputs, mode, max_new_tokens, eos_token_id):
    """Masked prefill, then plain causal decode steps through the cache, one token at a time (batch of one)."""
    assert inputs["input_ids"].shape[0] == 1
    prefill = stock_prefill(stock_eager_model, inputs, mode)
    return causal_decode(stock_eager_model, prefill, inputs["attention_mask"], max_new_tokens, eos_token_id)[0].tolist()


def emulated_flash_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """What transformers' flash_attention_2 does, on the CPU: causal (bottom-right), the layer's sliding window (a
    query sees the ``sliding_window`` keys up to its own) and a 2D padding mask."""
    lq, lk = query.shape[2], key.shape[2]
    key_pos, query_pos = torch.arange(lk)[None, :], torch.arange(lq)[:, None] + (lk - lq)
    allowed = key_pos <= query_pos
    if kwargs.get("sliding_window"):
        allowed &= key_pos > query_pos - kwargs["sliding_window"]
    allowed = allowed[None, None].expand(query.shape[0], 1, lq, lk)
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, -lk:].bool()
    groups = query.shape[1] // key.shape[1]
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1), attn_mask=allowed, scale=scaling
    )
    return out.transpose(1, 2).contiguous(), None


def two_image_layout():
    """``(is_visual, real)`` ``[2, 300]``: two 128-token images with text around them; the second row left-padded."""
    vis = torch.zeros(2, 300, dtype=torch.bool)
    vis[0, 5:133] = True  # two "images", text around and between
    vis[0, 150:278] = True
    vis[1, 40:168] = True
    real = torch.ones(2, 300, dtype=torch.long)
    real[1, :30] = 0  # left padding
    return vis, real


def corrupt_image(path):
    """Overwrite an image file with bytes no image reader accepts."""
    path.write_bytes(b"not an image")


# -- a toy lmms-eval task for the in-process adapter tests ----------------------------------------------------------

GEN = {"max_new_tokens": 5, "temperature": 0, "until": ["\n\n"]}


def docs():
    """The toy task of the in-process adapter tests: 1-3 images a doc, placeholders given or not."""
    return [
        {"question": "What colour is the image?", "n": 1},
        {"question": "Image 1: <image> Image 2: <image> Which is brighter?", "n": 2},
        {"question": "Describe the change.", "n": 2},
        {"question": "<image> Answer with one word.", "n": 1},
        {"question": "<image> <image> <image> What happened next?", "n": 3},
    ]


def doc_to_visual(doc):
    """The toy docs' images."""
    return images(doc["n"], offset=len(doc["question"]))


def make_model(tiny_model_dir, **kwargs):
    """``llava_futuremask`` on the tiny checkpoint, as lmms-eval creates it, with the toy task attached."""
    from lmms_eval.models import get_model

    cls = get_model("llava_futuremask")
    args = ",".join(f"{k}={v}" for k, v in {"pretrained": tiny_model_dir, "device": "cpu", **kwargs}.items())
    model = cls.create_from_arg_string(args, {"batch_size": 1, "device": None})
    model.task_dict = {"toy": {"test": docs()}}
    return model


def request(kind, args):
    """An lmms-eval request of the toy task."""
    from lmms_eval.api.instance import Instance

    return Instance(kind, args, idx=0, metadata={"task": args[4], "doc_id": args[3], "repeats": 1})


def generate_requests(gen=GEN, ids=range(5)):
    """``generate_until`` requests for toy docs ``ids``."""
    return [request("generate_until", (docs()[i]["question"], dict(gen), doc_to_visual, i, "toy", "test")) for i in ids]


def lmms_eval_cli(out, model, model_args, tasks, *flags, data=None):
    """One run of the real lmms-eval CLI writing into ``out``, offline (``data``: the MileBench folder)."""
    from lmms_futuremask.experiments.evalrun import OFFLINE_ENV, lmms_eval_command

    env = {**os.environ, **OFFLINE_ENV, **({"MILEBENCH_DIR": str(data)} if data else {})}
    command = [*lmms_eval_command(), "--model", model, "--model_args", model_args, "--tasks", tasks]
    return subprocess.run([*command, "--output_path", str(out), *flags], env=env, capture_output=True, text=True)


def milebench_archives(folder, data):
    """The six official ``MileBench_part<i>.tar.gz`` archives of the MileBench folder ``data``, into ``folder``."""
    import tarfile

    from lmms_futuremask.milebench import TASKS

    folder.mkdir(parents=True, exist_ok=True)
    names = [t.folder for t in TASKS]
    for i in range(6):
        with tarfile.open(folder / f"MileBench_part{i}.tar.gz", "w:gz") as tar:
            for name in names[i::6]:
                tar.add(data / name, arcname=f"MileBench/{name}")
    return folder


def texts(results):
    """The answer texts of ``generate_until``'s results (GenerationResult objects with token counts)."""
    return [result.text for result in results]


def protocol_sample(model, task, doc_id, system=""):
    """The sample an lmms-eval model of ours builds for one MileBench doc (what it would feed the model), given
    lmms-eval's context for it (``system`` + the official prompt, as ``--system_instruction`` makes it)."""
    from lmms_eval.api.instance import Instance

    from lmms_futuremask.milebench.prompt import full_prompt

    context = system + full_prompt(model.task_dict[task]["test"][doc_id])
    args = (context, {"max_new_tokens": 4}, None, doc_id, task, "test")
    instance = Instance("generate_until", args, idx=0, metadata={"task": task, "doc_id": doc_id, "repeats": 1})
    return model._request(instance, "generate").load()[0]

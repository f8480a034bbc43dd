"""Fine-tune only the head stages (or the RPN head) of a trained model, on backbone features and RPN proposals
computed once.

The experiment runner around deepace.head_finetune (what `deepace train-heads` does in one go for a lab's
own images), split in steps so that one feature cache of the 1,899 training cells serves many fine-tunes.

    python benchmarks/head_finetune.py cache --weights W --train T.json --train M.json --views 2 --out DIR
    python benchmarks/head_finetune.py train --weights W --cache DIR --iterations N --out HEADS_DIR \
        [--repeat M.json=3] [--lr 0.001] [--set model.repulsion_all_stages=true] [--resume]
    python benchmarks/head_finetune.py train --part rpn --weights W --cache DIR --iterations N --out RPN_DIR
    python benchmarks/head_finetune.py candidates --weights HEADS_DIR/model.pt --cache DIR --out C.pt \
        [--fresh-proposals]
    python benchmarks/head_finetune.py soup --weights A/model.pt --weights B/model.pt --out SOUP/model.pt
    deepace train-rescorer HEADS_DIR/model.pt --train T.json --train M.json --cache C.pt \
        --set model.rpn_post_nms_top_n_test=400 --calibrate-on … --out RESCORED.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from deepace.data.coco import read_coco
from deepace.data.copy_paste import ChromosomeBank
from deepace.engine import training_fingerprints
from deepace.head_finetune import (
    HeadSchedule,
    average_heads,
    cache_views,
    cached_candidates,
    train_heads,
    training_pool,
)
from deepace.inference import Detector, float_weights, network_from_payload, read_model_file, save_model
from deepace.provenance import META_KEY


def cache_command(args: argparse.Namespace) -> None:
    detector = Detector.load(args.weights, num_threads=2, optimise=True)
    sources = {coco: read_coco(coco) for coco in args.train}
    model = detector.config.model
    pasted = {
        coco: ChromosomeBank.from_records(
            sources[coco],
            model.preprocess_threshold,
            levels=model.brightfield_levels,
            denoise_above=model.denoise_above,
        )
        for coco in args.paste_into
    }
    for coco, bank in pasted.items():
        print(f"{coco}: {len(bank)} isolated chromosomes to paste", flush=True)
    cache_views(
        detector.model,
        detector.config,
        sources,
        args.views,
        args.out,
        pasted=pasted,
        pasted_views=args.pasted_views,
    )


def train_command(args: argparse.Namespace) -> None:
    torch.set_num_threads(2)
    payload = read_model_file(args.weights)
    model, config = network_from_payload(payload, args.set)
    index = json.loads((args.cache / "index.json").read_text())
    repeats = {coco: int(n) for coco, n in (item.split("=") for item in args.repeat)}
    schedule = HeadSchedule(
        iterations=args.iterations, lr=args.lr, warmup_iterations=args.warmup, seed=args.seed
    )
    train_heads(
        model,
        args.cache,
        training_pool(index, repeats),
        schedule,
        args.out,
        resume=args.resume,
        progress=False,
        on_log=lambda line: print(json.dumps(line), flush=True),
        part=args.part,
    )
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    cocos = dict.fromkeys(entry["coco"] for entry in index)
    trained = training_fingerprints([r for coco in cocos for r in read_coco(coco)], str(args.weights))
    meta = {"base_model": str(args.weights), "head_finetune": settings, META_KEY: trained}
    save_model(args.out / "model.pt", model.eval(), config, float(payload.get("score_threshold", 0.5)), meta)
    print(f"wrote {args.out / 'model.pt'}")


def candidates_command(args: argparse.Namespace) -> None:
    """The rescorer's labelled training candidates (as `deepace train-rescorer --cache` stores them) from
    the cached unflipped views, in the cache's order."""
    from deepace.rescoring import detector_with_rescorer

    torch.set_num_threads(2)
    detector = detector_with_rescorer(Detector.load(args.weights), args.set)
    index = json.loads((args.cache / "index.json").read_text())
    samples = cached_candidates(detector.model, args.cache, index, fresh_proposals=args.fresh_proposals)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(samples, args.out)
    print(f"wrote {args.out}: {len(samples)} images")


def soup_command(args: argparse.Namespace) -> None:
    """One model whose head stages are the mean of those of several head fine-tunes of one base
    (deepace.head_finetune.average_heads); config and threshold from the first, its rescorer to refit."""
    payloads = [read_model_file(path) for path in args.weights]
    states = [float_weights(payload) for payload in payloads]
    model, config = network_from_payload(payloads[0])
    model.load_state_dict(average_heads(states))
    meta = {"head_soup": [str(path) for path in args.weights]}
    save_model(args.out, model.eval(), config, float(payloads[0].get("score_threshold", 0.5)), meta)
    print(f"wrote {args.out}: the head stages of {len(states)} models averaged")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cache = sub.add_parser("cache")
    cache.add_argument("--weights", type=Path, default=None)
    cache.add_argument("--train", type=Path, action="append", required=True)
    cache.add_argument("--views", type=int, default=2, choices=[1, 2, 3, 4])
    cache.add_argument("--out", type=Path, required=True)
    cache.add_argument(
        "--paste-into",
        type=Path,
        action="append",
        default=[],
        help="a --train file (G-band) whose images get --pasted-views views with its own isolated "
        "chromosomes pasted on (deepace/data/copy_paste.py)",
    )
    cache.add_argument("--pasted-views", type=int, default=1)
    train = sub.add_parser("train")
    train.add_argument("--weights", type=Path, required=True)
    train.add_argument("--cache", type=Path, required=True)
    train.add_argument("--iterations", type=int, required=True)
    train.add_argument("--lr", type=float, default=0.001)
    train.add_argument("--warmup", type=int, default=100)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--repeat", action="append", default=[], help="COCO=N: its images N times per epoch")
    train.add_argument("--resume", action="store_true")
    train.add_argument("--set", action="append", default=[], help="e.g. model.repulsion=tnrl")
    train.add_argument("--part", choices=["heads", "rpn"], default="heads", help="what to train")
    train.add_argument("--out", type=Path, required=True)
    candidates = sub.add_parser("candidates")
    candidates.add_argument("--weights", type=Path, required=True)
    candidates.add_argument("--cache", type=Path, required=True)
    candidates.add_argument("--set", action="append", default=["model.rpn_post_nms_top_n_test=400"])
    candidates.add_argument(
        "--fresh-proposals", action="store_true", help="the model's RPN proposes again (it was trained)"
    )
    candidates.add_argument("--out", type=Path, required=True)
    soup = sub.add_parser("soup")
    soup.add_argument("--weights", type=Path, action="append", required=True)
    soup.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    commands = {
        "cache": cache_command,
        "train": train_command,
        "candidates": candidates_command,
        "soup": soup_command,
    }
    commands[args.command](args)


if __name__ == "__main__":
    main()

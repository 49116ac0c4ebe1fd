"""Benchmark: the byte-surgical image editor on a large multi-document file.

Prints figures (not a test; nothing here asserts). Run:
    .venv/bin/python benchmarks/gitops_edit.py [--megabytes 2] [--runs 5]

The file: a kustomization with an ``images:`` list, then Deployment documents (comments, labels,
Flux ``$imagepolicy`` setters) until the file is ``--megabytes`` large, as in a rendered bundle
kept in a GitOps repository. Each run is what one deploy does with the file: ``read_image``
(the previous tag) and ``edit_images`` (which parses the edited text again to check it), for an
image in the first document and for one set by a setter in the last document.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forgegen.runtime.kustomize import edit_images, read_image  # noqa: E402


def bundle(megabytes: float) -> str:
    parts = ["apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nimages:\n"
             + "".join(f"  - name: registry.example/shop/svc{i}\n    newTag: amd64-0000000\n" for i in range(50))]
    i = 0
    size = len(parts[0])
    while size < megabytes * 1_000_000:
        doc = (f"# service {i}\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: svc{i}\n  namespace: shop\n"
               f"  labels: {{app: svc{i}, team: \"shop\", tier: backend}}\nspec:\n  replicas: 2\n  selector:\n"
               f"    matchLabels: {{app: svc{i}}}\n  template:\n    metadata:\n      labels: {{app: svc{i}}}\n"
               f"    spec:\n      containers:\n        - name: svc{i}\n"
               f"          image: registry.example/shop/svc{i}:v1 # {{\"$imagepolicy\": \"flux-system:svc{i}\"}}\n"
               f"          ports: [{{containerPort: 8080, name: http}}]\n          env:\n"
               f"            - {{name: MODE, value: \"production\"}}\n            - {{name: INDEX, value: \"{i}\"}}\n")
        parts.append(doc)
        size += len(doc) + 4
        i += 1
    return "---\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    text = bundle(args.megabytes)
    last = text.rsplit("name: svc", 1)[1].split("\n", 1)[0]
    print(f"file: {len(text.encode()) / 1e6:.2f} MB, {text.count(chr(10) + '---' + chr(10)) + 1} documents")
    for label, image in (("images[] entry (first document)", "registry.example/shop/svc7"),
                         ("$imagepolicy setter (last document)", f"registry.example/shop/svc{last}")):
        times = []
        for run in range(args.runs):
            t0 = time.perf_counter()
            read_image(text, image, source="bundle.yaml")
            result = edit_images(text, image, tag=f"amd64-{run:07d}", source="bundle.yaml")
            times.append(time.perf_counter() - t0)
            assert result.changed
        print(f"{label}: read + edit median {statistics.median(times) * 1000:.0f} ms, "
              f"max {max(times) * 1000:.0f} ms ({args.runs} runs)   (target well under 500 ms)")


if __name__ == "__main__":
    main()

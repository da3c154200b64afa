"""Hierarchical prototypes of real-image features (DistDiff, Zhu et al. 2024).

Per class: the class prototype (mean of the L2-normalised features) and K group prototypes — the
centres of K clusters of the class's features — by FAISS spherical k-means (seeded; the default), on
the GPU when the features are CUDA tensors and a GPU build of FAISS is installed, or by average-linkage
agglomerative clustering on Euclidean distances of the L2-normalised features (the official code:
scikit-learn's AgglomerativeClustering(linkage="average"); here scipy's equivalent). Prototypes are
returned L2-normalised, as the official code normalises them before guidance.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

CLUSTERINGS = ("kmeans", "agglomerative")


def class_prototype(features: torch.Tensor) -> torch.Tensor:
    """Normalised mean of the normalised features (D,)."""
    f = torch.nn.functional.normalize(features.float(), dim=-1)
    return torch.nn.functional.normalize(f.mean(0), dim=-1)


def faiss_gpu_available() -> bool:
    """Whether the installed FAISS is a GPU build that sees a GPU (faiss-gpu-cu12, the `gpu` extra)."""
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def kmeans_groups(features: np.ndarray, k: int, seed: int, niter: int = 50, gpu: bool = False) -> np.ndarray:
    """Cluster labels (N,) by FAISS spherical k-means on normalised features (on the GPU if `gpu`)."""
    import faiss

    x = np.ascontiguousarray(features, dtype=np.float32)
    # min_points_per_centroid=1: few-shot classes have a handful of images, which is expected here
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=niter,
        seed=seed,
        spherical=True,
        min_points_per_centroid=1,
        nredo=10,
        verbose=False,
        gpu=gpu,
    )  # best of 10 seeded restarts
    km.train(x)
    _, labels = km.index.search(x, 1)
    return labels[:, 0]


def agglomerative_groups(features: np.ndarray, k: int) -> np.ndarray:
    """Cluster labels (N,) by average-linkage agglomerative clustering on Euclidean distances (of the
    normalised features the caller passes), cut at k clusters: the official code's clustering."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(features) == 1:
        return np.zeros(1, dtype=np.int64)
    tree = linkage(features.astype(np.float64), method="average", metric="euclidean")
    return fcluster(tree, t=k, criterion="maxclust") - 1


def group_prototypes(
    features: torch.Tensor, k: int, clustering: str = "kmeans", seed: int = 0
) -> torch.Tensor:
    """(k', D) normalised group centres, k' = min(k, number of images); empty clusters dropped.
    K-means runs on the GPU when `features` is a CUDA tensor and FAISS has a GPU build."""
    if clustering not in CLUSTERINGS:
        raise ValueError(f"clustering must be one of {CLUSTERINGS}, got {clustering!r}")
    gpu = features.is_cuda and clustering == "kmeans" and faiss_gpu_available()
    f = torch.nn.functional.normalize(features.detach().float().cpu(), dim=-1)
    k = min(k, len(f))
    if k == len(f):
        labels = np.arange(len(f))  # one image per group: the images themselves
    elif clustering == "kmeans":
        labels = kmeans_groups(f.numpy(), k, seed, gpu=gpu)
    else:
        labels = agglomerative_groups(f.numpy(), k)
    centres = [f[torch.from_numpy(labels == g)].mean(0) for g in sorted(set(labels.tolist()))]
    return torch.nn.functional.normalize(torch.stack(centres), dim=-1)


def hierarchical_prototypes(
    features_by_class: dict[int, torch.Tensor],
    k: int,
    clustering: str = "kmeans",
    seed: int = 0,
    class_names: list[str] | None = None,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{class: (class prototype (D,), group prototypes (K, D))}. Classes with fewer than K images get
    one group per image, with a single warning naming them. Group tensors are padded to K rows by
    repeating the last centre, which leaves nearest-group distances unchanged and lets records stack."""
    if k < 1:
        raise ValueError(f"the number of group prototypes K must be >= 1, got {k}")
    short = [c for c, f in features_by_class.items() if len(f) < k]
    if short:
        names = [class_names[c] if class_names else str(c) for c in short]
        warnings.warn(
            f"K={k} group prototypes but {len(short)} class(es) have fewer images ({', '.join(names[:10])}"
            f"{' …' if len(names) > 10 else ''}): K is clamped to their image count",
            stacklevel=2,
        )
    out = {}
    for c, f in features_by_class.items():
        groups = group_prototypes(f, k, clustering, seed)
        if len(groups) < k:
            groups = torch.cat([groups, groups[-1:].expand(k - len(groups), -1)])
        out[c] = (class_prototype(f.cpu()), groups)
    return out

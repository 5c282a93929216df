"""Classifiers fit on frozen features. Each is a pure function of arrays (torch on CPU or CUDA where it helps).

- `ridge`: one-vs-rest ridge, alpha grid by CV from one eigendecomposition per fold (ImageNet, iNat21, iWildCam, Pl@ntNet, plankton).
- `svm`: NeWT's / Ages' randomised SVC search, identical choices to scikit-learn's RandomizedSearchCV.
- `simpleshot`: centre, L2-normalise, nearest centroid (Birds525, KABR, Rare Species).
- `knn`: cosine / Euclidean neighbours, leave-one-out for re-identification (Beluga).
- `exemplar_svm`: one linear SVM per query, all trained at once (Leopard).
- `logistic`: L2 logistic regression (scikit-learn's optimum).
- `mlp`: multi-label MLP trainer (FishNet).

Each module imports torch / scikit-learn itself, so importing `biobench.probes` is cheap.
"""

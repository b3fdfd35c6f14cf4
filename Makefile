# The two commands of README.md: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: malloc native demo eval-demo vae-demo ae-demo gan-demo pix2pix-demo cyclegan-demo test lint data bench-torch \
  clean-demo constraints

# tcmalloc under every program and test run here, unless LD_PRELOAD is set already (`make
# demo LD_PRELOAD=` runs on glibc's malloc): on a 2-core Intel Xeon XLA:CPU compiled ~1.7x
# faster with it, and the steps after an in-process compile ran ~1.2x faster (README, "Host
# memory").
ifeq ($(origin LD_PRELOAD),undefined)
export LD_PRELOAD = $(firstword $(wildcard /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 \
  /usr/lib64/libtcmalloc_minimal.so.4))
endif
malloc:
	scripts/get_tcmalloc.sh >/dev/null

# The oneDNN convolutions XLA:CPU calls (jaxgen/models/onednn.py; README, "CPU
# convolutions"): built once into jaxgen/native/, optional outside the tests.
native: $(STAMP)
	scripts/build_native.sh $(BIN)/python

# Installs the exact versions of constraints.txt (pyproject.toml has the ranges).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	# The peer for the Inception parity test, in its own step: a CPU PyTorch, and
	# torch-fidelity without its dependencies (its torchvision does not import beside it).
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q --no-deps torch-fidelity==0.4.0
	touch $(STAMP)

# Rewrites constraints.txt from the venv (after installing a new version there on purpose).
constraints: $(STAMP)
	{ sed -n '1,3p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^jaxgen'; } \
	  > constraints.txt.new && mv constraints.txt.new constraints.txt

data:
	scripts/get_fashion_mnist.sh

# Trains the CPU demo into runs/demo; rerunning resumes from the last checkpoint. The demo is
# EDM, class-conditional with guidance (configs/edm_fashion_mnist.py:demo): 0.42-0.45x the
# FD-FMNIST of the DDPM demo (DEMO_CONFIG=configs/ddpm_fashion_mnist.py:demo) in 0.44x its
# time (side by side on a 2-core Intel Xeon, with the oneDNN convolutions: README, "Benchmark").
DEMO_CONFIG ?= configs/edm_fashion_mnist.py:demo
demo: $(STAMP) malloc native data
	$(BIN)/jaxgen-train --config=$(DEMO_CONFIG) --workdir=runs/demo

# Evaluates the demo run: FD-FMNIST next to the real-data floor (trains the classifier once).
CLASSIFIER := runs/fmnist_classifier
EVAL_SAMPLES ?= 5000
# INCEPTION=path/to/pt_inception-2015-12-05-6726825d.pth adds FID/IS/KID/precision/recall
# against the Fashion-MNIST test split (its Inception statistics are computed once).
INCEPTION ?=
INCEPTION_REF := runs/fmnist_test_inception.npz
eval-demo: $(STAMP) malloc native data
	test -f $(CLASSIFIER)/train_stats.npz || \
	  $(BIN)/jaxgen-eval train_classifier --output=$(CLASSIFIER)
	$(if $(INCEPTION),test -f $(INCEPTION_REF) || $(BIN)/jaxgen-eval stats --split=test \
	  --inception_weights=$(INCEPTION) --output=$(INCEPTION_REF))
	$(BIN)/jaxgen-eval --workdir=runs/demo --num_samples=$(EVAL_SAMPLES) --classifier_dir=$(CLASSIFIER) \
	  $(if $(INCEPTION),--inception_weights=$(INCEPTION) --reference=$(INCEPTION_REF))

# The VAE on Fashion-MNIST: train, then latent walks + prior samples, then test-set bits/dim
# (and FD-FMNIST of its samples when the classifier of eval-demo exists).
FD_FMNIST = --classifier_dir=$(if $(wildcard $(CLASSIFIER)/train_stats.npz),$(CLASSIFIER),)
vae-demo: $(STAMP) malloc native data
	$(BIN)/jaxgen-train --config=configs/vae_fashion_mnist.py:demo --workdir=runs/vae_demo
	$(BIN)/jaxgen-sample --workdir=runs/vae_demo --interpolate
	$(BIN)/jaxgen-eval --workdir=runs/vae_demo --num_samples=$(EVAL_SAMPLES) $(FD_FMNIST)

# The KL autoencoder (latent-diffusion first stage): train, latent walks, test-split PSNR.
ae-demo: $(STAMP) malloc native data
	$(BIN)/jaxgen-train --config=configs/autoencoder_kl_fashion_mnist.py:demo --workdir=runs/ae_demo
	$(BIN)/jaxgen-sample --workdir=runs/ae_demo --interpolate
	$(BIN)/jaxgen-eval --workdir=runs/ae_demo

# The GAN demo: train, a truncation sweep and one more figure (GAN_DEMO_FIGURE: the
# class-conditional DCGAN's classes from the same latents; --style_mixing for StyleGAN2),
# then FD-FMNIST, precision/recall and the class histogram of 10,000 samples (the classifier
# is trained once, as for eval-demo).
GAN_DEMO_CONFIG ?= configs/dcgan_fashion_mnist.py:demo
GAN_DEMO_FIGURE ?= --sweep=labels=0,1,2,3,4,5,6,7,8,9
gan-demo: $(STAMP) malloc native data
	$(BIN)/jaxgen-train --config=$(GAN_DEMO_CONFIG) --workdir=runs/gan_demo
	$(BIN)/jaxgen-sample --workdir=runs/gan_demo --num_images=8 \
	  --sweep=truncation_psi=1,0.8,0.6,0.4,0.2,0
	$(BIN)/jaxgen-sample --workdir=runs/gan_demo --num_images=8 \
	  $(GAN_DEMO_FIGURE)
	test -f $(CLASSIFIER)/train_stats.npz || \
	  $(BIN)/jaxgen-eval train_classifier --output=$(CLASSIFIER)
	$(BIN)/jaxgen-eval --workdir=runs/gan_demo --num_samples=10000 --classifier_dir=$(CLASSIFIER)

# Image-to-image demos: train (grids of test images every 500 steps in samples/), then
# jaxgen-eval over the whole test split: Pix2Pix edges2fashion PSNR/SSIM/L1, FD-FMNIST of
# the translations against the targets and class match; CycleGAN sneaker2boot both ways,
# FD-FMNIST against the other domain, translation accuracy and cycle L1 (the classifier is
# trained once, as for eval-demo). CycleGAN's small networks step ~10% faster on one CPU device
# than split over two (benchmarks/train_step.py, batch 16, alternating runs on a 2-core AMD EPYC:
# 204-218 against 237-238 ms).
pix2pix-demo: $(STAMP) malloc native data
	$(BIN)/jaxgen-train --config=configs/pix2pix_edges2fashion.py:demo --workdir=runs/pix2pix_demo
	test -f $(CLASSIFIER)/train_stats.npz || \
	  $(BIN)/jaxgen-eval train_classifier --output=$(CLASSIFIER)
	$(BIN)/jaxgen-eval --workdir=runs/pix2pix_demo --classifier_dir=$(CLASSIFIER)

cyclegan-demo: $(STAMP) malloc native data
	$(BIN)/jaxgen-train --config=configs/cyclegan_sneaker2boot.py:demo --workdir=runs/cyclegan_demo \
	  --num_cpu_devices=1
	test -f $(CLASSIFIER)/train_stats.npz || \
	  $(BIN)/jaxgen-eval train_classifier --output=$(CLASSIFIER)
	$(BIN)/jaxgen-eval --workdir=runs/cyclegan_demo --classifier_dir=$(CLASSIFIER)

# The whole suite on CPU JAX with 8 simulated devices, in TEST_WORKERS processes (one per
# core on our 2-core CI machines; each test file runs whole in one worker).
TEST_WORKERS ?= 2
test: $(STAMP) malloc
	scripts/build_native.sh $(BIN)/python --require
	scripts/get_fashion_mnist.sh --optional
	$(BIN)/ruff check jaxgen tests configs benchmarks
	$(BIN)/shellcheck launch/*.sh launch/slurm.sbatch scripts/*.sh .ci/run
	JAXGEN_TEST_ONEDNN=require $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=12

# jaxgen against PyTorch (diffusers' UNet2DModel, oneDNN) on this CPU, side by side:
# benchmarks/vs_pytorch.py in its own venv, so neither is a dependency of jaxgen.
BENCH_VENV ?= .venv-bench
BENCH_CASES ?= demo_b64,cifar10_b8,cifar10_b32,demo_sample
$(BENCH_VENV)/.installed: benchmarks/requirements-torch.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q -r benchmarks/requirements-torch.txt
	touch $@
bench-torch: $(STAMP) malloc native $(BENCH_VENV)/.installed
	$(BIN)/python benchmarks/vs_pytorch.py --torch_python=$(BENCH_VENV)/bin/python \
	  --cases=$(BENCH_CASES)

clean-demo:
	rm -rf runs/demo runs/vae_demo runs/ae_demo runs/gan_demo runs/pix2pix_demo runs/cyclegan_demo

# The image every cluster node runs (cluster.yaml's docker: section, deploy/kuberay/*.yaml): Ray's own GPU
# image for the Ray and Python versions the project pins, plus the project and its pinned dependencies, so
# that no node installs anything at boot. README "Running on a cluster":
#   docker build -t ghcr.io/your-org/ocean-ray:0.1.0 . && docker push ghcr.io/your-org/ocean-ray:0.1.0
#
# rayproject/ray tags read RAY-pyXY-PLATFORM; cu130 is CUDA 13.0, the CUDA of the torch 2.14.1 wheels
# (docs/reference/ray_stack.md §10). A GPU node needs an NVIDIA driver of 580 or later and the NVIDIA
# container toolkit on the host (the AMI of cluster.yaml has both). tests/unit/test_deploy_files.py checks
# that the versions here are those of pyproject.toml.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cu130
FROM ${RAY_IMAGE}

# The CUDA stack (torch pulls about 5 GB of nvidia-* wheels) in a layer of its own: a change to the
# project's code does not download it again.
RUN pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1

# The project, not editable, with the gpu extra and every pin of pyproject.toml (ray is already in the
# image at the pinned version, so pip keeps it). Jobs still bring their current code with
# `ray job submit --working-dir .`; rebuild the image when pyproject.toml changes.
WORKDIR /home/ray/ocean-ray
COPY --chown=ray:users pyproject.toml README.md LICENSE ./
COPY --chown=ray:users ocean ./ocean
COPY --chown=ray:users data_prep ./data_prep
COPY --chown=ray:users pipelines ./pipelines
COPY --chown=ray:users jobs ./jobs
RUN pip install --no-cache-dir ".[gpu,export]" \
 && cd /home/ray \
 && python -c "import ocean, data_prep, pipelines, jobs.cli, torch, torchvision, ray, mlflow, onnxruntime"
WORKDIR /home/ray

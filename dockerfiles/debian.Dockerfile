# The alternative: any Debian image with python3, and awslambdaric (shipped in deps/) as
# the entry point. Runs where the AWS base image is not wanted or not reachable.
ARG BASE_IMAGE=python:3.12-slim-bookworm
FROM ${BASE_IMAGE}
ENV LAMBDA_TASK_ROOT=/var/task PYTHONPATH=/var/task
COPY deps/ /var/task/
COPY function/ /var/task/
WORKDIR /var/task
ENTRYPOINT ["python3", "-m", "awslambdaric"]
CMD ["handler.app.lambda_handler"]

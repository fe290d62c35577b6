# The default: AWS's Lambda Python base image, which holds the runtime interface client
# and the emulator. optimizer fills deps/ (wheels for the target) and function/ (handler
# and model); two COPY layers so a new model reuses the dependency layer.
ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.12
FROM ${BASE_IMAGE}
COPY deps/ /var/task/
COPY function/ /var/task/
WORKDIR /var/task
CMD ["handler.app.lambda_handler"]

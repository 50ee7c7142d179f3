"""What a team does in MLflow, run with MLflow's own client (in the MLflow venv, scripts/lib/fetch-mlflow.sh):
register a version from a directory of files, move an alias, read a version's tags. Prints its answer as JSON.

    python mlflow_registry.py URI register NAME DIR [--owner O] [--metric k=v ...] [--description D] [--tag k=v ...]
                                             [--artifacts LOCATION]
    python mlflow_registry.py URI alias NAME ALIAS VERSION
    python mlflow_registry.py URI model-tag NAME KEY VALUE
    python mlflow_registry.py URI tags NAME VERSION
"""

import argparse
import json
import os
import sys

import mlflow
from mlflow import MlflowClient


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("uri")
    sub = parser.add_subparsers(dest="command", required=True)
    register = sub.add_parser("register")
    register.add_argument("name")
    register.add_argument("dir")
    register.add_argument("--owner")
    register.add_argument("--description", default="")
    register.add_argument("--metric", action="append", default=[])
    register.add_argument("--tag", action="append", default=[])
    register.add_argument("--artifacts", help="the experiment's artifact location (default: the server's)")
    alias = sub.add_parser("alias")
    alias.add_argument("name")
    alias.add_argument("alias")
    alias.add_argument("version")
    model_tag = sub.add_parser("model-tag")
    model_tag.add_argument("name")
    model_tag.add_argument("key")
    model_tag.add_argument("value")
    tags = sub.add_parser("tags")
    tags.add_argument("name")
    tags.add_argument("version")
    args = parser.parse_args()

    mlflow.set_tracking_uri(args.uri)
    client = MlflowClient()
    if args.command == "register":
        experiment = "sluice-tests" + (f" at {args.artifacts}" if args.artifacts else "")
        if args.artifacts and args.artifacts.startswith("s3://"):
            # The bucket (MLFLOW_S3_ENDPOINT_URL and the AWS_* credentials in the environment) is made if need be.
            import boto3
            bucket = args.artifacts[len("s3://"):].split("/", 1)[0]
            s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
            if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
                s3.create_bucket(Bucket=bucket)
        if args.artifacts and mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=args.artifacts)
        mlflow.set_experiment(experiment)
        with mlflow.start_run() as run:
            for metric in args.metric:
                key, value = metric.split("=", 1)
                mlflow.log_metric(key, float(value))
            # The files go up as the run's `model` artifact directory, as an ONNX flavour's would.
            mlflow.log_artifacts(args.dir, artifact_path="model")
        try:
            client.get_registered_model(args.name)
        except mlflow.exceptions.MlflowException:
            client.create_registered_model(args.name)
        tags = dict(t.split("=", 1) for t in args.tag)
        if args.owner:
            tags["owner"] = args.owner
        version = client.create_model_version(
            args.name,
            source=f"{run.info.artifact_uri}/model",
            run_id=run.info.run_id,
            tags=tags,
            description=args.description,
        )
        print(json.dumps({"version": int(version.version), "run_id": run.info.run_id}))
    elif args.command == "model-tag":
        client.set_registered_model_tag(args.name, args.key, args.value)
        print(json.dumps({"ok": True}))
    elif args.command == "alias":
        client.set_registered_model_alias(args.name, args.alias, args.version)
        print(json.dumps({"ok": True}))
    else:
        version = client.get_model_version(args.name, args.version)
        print(json.dumps(dict(version.tags)))


if __name__ == "__main__":
    sys.exit(main())

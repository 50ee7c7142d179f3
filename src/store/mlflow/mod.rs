//! A model repository in an MLflow Model Registry (`models.repository = "mlflow+http://host:5000"`): registered
//! models and their versions, read through the tracking server's REST API ([`api`]).

pub mod api;

"""Model registry, CI gates, exports, deployments and prediction logs."""

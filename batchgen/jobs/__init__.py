"""A job file's way in: read with line marks (yamldoc, spec, job_files, user_files, images),
its templates filled (templates), expanded into requests with their identities (expand,
origins), and checked against the schemas (schemas, validate); the model catalogue the
checks read (models, model_schema), its price rules (prices), and what tells a rerun that
nothing changed (unchanged)."""

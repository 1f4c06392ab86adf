"""Pipeline logic with no Airflow in it: event constants, synthetic data, SQL rendering, training and scoring."""

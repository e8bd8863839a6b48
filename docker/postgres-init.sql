-- Runs once, when the postgres volume is created: the results history gets its own database, owned
-- by the same role as Airflow's metadata database (POSTGRES_USER).
CREATE DATABASE reid_results;

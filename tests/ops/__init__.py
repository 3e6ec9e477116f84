"""Operations tests: metrics module, Docker/compose files, Prometheus and Grafana."""

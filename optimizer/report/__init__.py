"""Reports: report.json is the build result itself; report.md renders it."""

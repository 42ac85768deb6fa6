"""What only the app needs: workspace, background jobs, clip sources, plots, uploads, wording, and the tabs."""

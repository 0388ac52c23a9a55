"""Fast model vs optimisation engines on the same photos: scoring, the job, and its reports."""

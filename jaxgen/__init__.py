"""jaxgen: generative image models on one sharded JAX trainer."""

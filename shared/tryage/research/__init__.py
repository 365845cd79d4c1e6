"""The paper's research tools: the router's latent space (:mod:`.latent`) and joint router/expert
training (:mod:`.joint`). They build on the core and nothing in the core imports them."""

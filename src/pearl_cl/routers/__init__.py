"""Task-identity routers for class- and domain-incremental inference: one module per router,
registered in :data:`pearl_cl.registry.ROUTERS` (the interface is :class:`~pearl_cl.routers.base.Router`).

No task label and no stored samples: a router picks one task per image from what each task
branch says about it and the statistics kept per task (:mod:`pearl_cl.routers.statistics`).
"""

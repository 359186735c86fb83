"""Continual-learning methods, one module each, registered in :data:`pearl_cl.registry.METHODS`.

Every method implements :class:`~pearl_cl.methods.learner.Learner`. The registry imports every
module of this package on first use, so a new method is one new file here with a class
decorated ``@METHODS.register("name")``.
"""

"""A procedural world with known ground truth, for training and measuring the toy models (#16).

- ``scene``: random scenes of primitives on an optional ground disc, and their lights;
- ``render``: a batched torch ray caster (analytic intersections, Lambert, hard shadows) giving
  RGB, alpha and depth for any pixel K and OpenCV c2w, on CPU or GPU;
- ``prompts``: the light vocabulary ("warm light from the left") and its meaning for a camera;
- ``data``: training batches made on the fly (views, windows, relighting pairs);
- ``blender``: the same scene built in Blender (Cycles, direct light only), bpy only.
"""

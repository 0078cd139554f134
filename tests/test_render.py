"""Rasteriser against hand-computed coverage, ray-plane depths and occlusion order."""
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from handprop_jax.render import max_face_extent, render, render_batch, vertex_normals

F, C, S = 20.0, 7.5, 16  # focal, principal point, image side
K = np.array([[F, 0, C], [0, F, C], [0, 0, 1]], np.float32)
QUAD_FACES = np.array([[0, 1, 2], [0, 2, 3]], np.int32)


def quad(half: float, z, shift=(0.0, 0.0)) -> np.ndarray:
    """Square (2 triangles) of half-side ``half`` centred at ``shift`` with corner depths z(x, y)."""
    pts = [(-half, -half), (half, -half), (half, half), (-half, half)]
    out = []
    for x, y in pts:
        x, y = x + shift[0], y + shift[1]
        out.append((x, y, z(x, y)))
    return np.array(out, np.float32)


jrender = jax.jit(render, static_argnames=("image_size", "face_chunk", "splat_window"))


def _render(verts, faces, colors, fn):
    return fn(jnp.asarray(verts), jnp.asarray(faces), jnp.asarray(K), jnp.asarray(colors),
              jnp.array([0.0, 0.0, -1.0]), background=jnp.full((S, S, 3), 0.25))


class RenderTest(parameterized.TestCase):

    @parameterized.parameters(None, 6)
    def test_quad_coverage_and_depth(self, splat_window):
        # corners at depth 2, x = +-0.3 -> u = 7.5 +- 3 = 4.5 .. 10.5: pixel centres 5..10 inside.
        verts = quad(0.3, lambda x, y: 2.0)
        assert int(max_face_extent(jnp.asarray(verts), jnp.asarray(QUAD_FACES), jnp.asarray(K))) == 6
        fn = lambda *a, **k: jrender(*a, image_size=(S, S), face_chunk=1, splat_window=splat_window, **k)
        out = _render(verts, QUAD_FACES, np.ones((4, 3)), fn)
        expected = np.zeros((S, S), bool)
        expected[5:11, 5:11] = True
        np.testing.assert_array_equal(np.asarray(out["mask"]), expected)
        np.testing.assert_allclose(np.asarray(out["depth"])[expected], 2.0, rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(out["depth"])[~expected], 0.0)
        # flat albedo 1, normal along the light (two-sided): full brightness inside, background outside
        np.testing.assert_allclose(np.asarray(out["image"])[expected], 1.0, atol=1e-5)
        np.testing.assert_allclose(np.asarray(out["image"])[~expected], 0.25, atol=1e-6)

    def test_tilted_plane_depth_matches_ray_intersection(self):
        slope = 0.5  # plane z = 2 + slope * x
        verts = quad(0.5, lambda x, y: 2.0 + slope * x)
        out = jrender(jnp.asarray(verts), jnp.asarray(QUAD_FACES), jnp.asarray(K), jnp.ones((4, 3)),
                     jnp.array([0.0, 0.0, -1.0]), (S, S), jnp.zeros((S, S, 3)), face_chunk=2)
        mask = np.asarray(out["mask"])
        assert mask.sum() > 50
        v, u = np.nonzero(mask)
        t = 2.0 / (1.0 - slope * (u - C) / F)  # ray (x/z = (u-c)/f) meets the plane at z = t
        np.testing.assert_allclose(np.asarray(out["depth"])[mask], t, rtol=1e-4)

    def test_occlusion_is_by_depth_not_face_order(self):
        near = quad(0.2, lambda x, y: 1.5, shift=(0.1, 0.0))
        far = quad(0.3, lambda x, y: 2.5)
        colors = np.concatenate([np.tile([[1.0, 0, 0]], (4, 1)), np.tile([[0, 0, 1.0]], (4, 1))])
        for order in (0, 1):
            verts = np.concatenate([near, far] if order == 0 else [far, near])
            cols = colors if order == 0 else colors[::-1]
            faces = np.concatenate([QUAD_FACES, QUAD_FACES + 4])
            out = jrender(jnp.asarray(verts), jnp.asarray(faces), jnp.asarray(K), jnp.asarray(cols),
                         jnp.array([0.0, 0.0, -1.0]), (S, S), jnp.zeros((S, S, 3)), face_chunk=3)
            img, depth = np.asarray(out["image"]), np.asarray(out["depth"])
            # near quad: x in [-0.1, 0.3] at z 1.5 -> u in [6.17, 11.5]; pixel (7, 8) is in both
            np.testing.assert_allclose(img[7, 8], [1, 0, 0], atol=1e-5)
            np.testing.assert_allclose(depth[7, 8], 1.5, rtol=1e-5)
            # far quad: u in 7.5 +- 0.3 * 20 / 2.5 = [5.1, 9.9]: column 6 is covered only by it
            np.testing.assert_allclose(img[7, 6], [0, 0, 1], atol=1e-5)
            np.testing.assert_allclose(depth[7, 6], 2.5, rtol=1e-5)
            assert not out["mask"][7, 5]

    def test_lambert_shading_and_batch(self):
        verts = quad(0.3, lambda x, y: 2.0)
        light = np.array([0.0, np.sin(1.0), -np.cos(1.0)])  # 1 rad from the normal (0, 0, -1)
        args = dict(vertex_colors=jnp.full((4, 3), 0.8), background=jnp.zeros((S, S, 3)))
        out = jrender(jnp.asarray(verts), jnp.asarray(QUAD_FACES), jnp.asarray(K),
                      light_dir=jnp.asarray(light),
                      image_size=(S, S), ambient=0.3, **args)
        np.testing.assert_allclose(np.asarray(out["image"])[8, 8], 0.8 * (0.3 + 0.7 * np.cos(1.0)), rtol=1e-5)
        vb = jnp.stack([jnp.asarray(verts), jnp.asarray(verts) * 1.2])
        batch = render_batch(vb, jnp.asarray(QUAD_FACES), jnp.stack([jnp.asarray(K)] * 2),
                             jnp.full((2, 4, 3), 0.8), jnp.asarray(np.stack([light] * 2)), (S, S),
                             jnp.zeros((2, S, S, 3)), jnp.array([0.3, 0.3]))
        np.testing.assert_allclose(batch["image"][0], out["image"], atol=1e-6)
        np.testing.assert_allclose(batch["depth"][1][8, 8], 2.4, rtol=1e-5)
        vmapped = jax.jit(jax.vmap(lambda v: render(v, jnp.asarray(QUAD_FACES), jnp.asarray(K),
                                                    jnp.full((4, 3), 0.8), jnp.asarray(light), (S, S),
                                                    jnp.zeros((S, S, 3)), ambient=0.3, splat_window=8)))(vb)
        np.testing.assert_allclose(vmapped["image"], batch["image"], atol=1e-6)

    def test_vertex_normals_of_a_flat_quad(self):
        n = vertex_normals(jnp.asarray(quad(0.3, lambda x, y: 2.0)), jnp.asarray(QUAD_FACES))
        np.testing.assert_allclose(np.abs(np.asarray(n)), np.tile([[0, 0, 1.0]], (4, 1)), atol=1e-6)
        assert jax.numpy.isfinite(n).all()

    def test_splat_equals_dense_on_a_closed_mesh(self):
        nu, nv = 24, 12  # UV sphere of radius 0.3 at depth 2: small triangles, self-occluding
        th, ph = np.meshgrid(np.linspace(0.2, np.pi - 0.2, nv), np.linspace(0, 2 * np.pi, nu, endpoint=False),
                             indexing="ij")
        verts = np.stack([np.sin(th) * np.cos(ph), np.cos(th), np.sin(th) * np.sin(ph)], -1).reshape(-1, 3)
        verts = (verts * 0.6 + [0.05, -0.02, 2.0]).astype(np.float32)
        faces = []
        for i in range(nv - 1):
            for j in range(nu):
                a, b = i * nu + j, i * nu + (j + 1) % nu
                faces += [[a, b, a + nu], [b, b + nu, a + nu]]
        faces = jnp.asarray(np.array(faces, np.int32))
        colors = jnp.asarray(np.random.default_rng(0).uniform(size=verts.shape))
        window = int(max_face_extent(jnp.asarray(verts), faces, jnp.asarray(K)))
        args = (jnp.asarray(verts), faces, jnp.asarray(K), colors, jnp.array([0.3, -0.2, -1.0]), (S, S),
                jnp.zeros((S, S, 3)))
        dense, splat = jrender(*args), jrender(*args, splat_window=window)
        assert 30 < int(dense["mask"].sum()) < S * S
        np.testing.assert_array_equal(np.asarray(dense["mask"]), np.asarray(splat["mask"]))
        np.testing.assert_allclose(dense["depth"], splat["depth"], atol=1e-5)
        np.testing.assert_allclose(dense["image"], splat["image"], atol=1e-5)
        # visible depth is the front of the sphere: nearer than the centre
        assert float(np.asarray(dense["depth"])[np.asarray(dense["mask"])].max()) < 2.05

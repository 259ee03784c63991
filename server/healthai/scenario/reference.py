"""Independent implementations of the model in ``csrc/metapop.h``, for tests and benchmarks.

``NumpyEngine``: the same tau-leaping in vectorized NumPy/SciPy (sparse matrix x dense runs, NumPy's
binomial sampler: the same distribution, not the same random numbers). ``solve_ode``: the
deterministic equations through ``scipy.integrate.solve_ivp``.
"""

from __future__ import annotations

import numpy as np
import scipy.integrate
import scipy.sparse

from healthai.ops.metapop import MobilityGraph
from healthai.scenario.model import away_rows, edge_travel


def mobility_matrix(graph: MobilityGraph, travel: np.ndarray | None = None) -> scipy.sparse.csr_matrix:
    """A[i, j] = w_ij f_ij / N_j (f: the edges' travel multipliers for one day's [n], else 1), so that
    A @ I gives sum_j w_ij f_ij I_j / N_j."""
    n = graph.n_regions
    f = 1.0 if travel is None else edge_travel(graph, travel)
    w = graph.weights * f / graph.population[graph.indices]
    return scipy.sparse.csr_matrix((w, graph.indices, graph.indptr), shape=(n, n))


def coupling(graph: MobilityGraph, travel: np.ndarray) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """One day's mobility_matrix and home fractions 1 - a_i for its travel multipliers [n]."""
    return mobility_matrix(graph, travel), 1.0 - away_rows(graph, travel)


def force(
    a: scipy.sparse.csr_matrix, home: np.ndarray, inv_n: np.ndarray, I: np.ndarray, contact: np.ndarray  # noqa: E741
) -> np.ndarray:
    """lambda / beta: contact_i ((1 - a_i) I_i/N_i + sum_j w_ij f_ij I_j/N_j) (``coupling``'s a, home);
    I [n] or [n, runs]."""
    col = (lambda v: v[:, None]) if I.ndim == 2 else (lambda v: v)
    return col(contact) * (col(home * inv_n) * I + a @ I)


class NumpyEngine:
    def __init__(
        self,
        graph: MobilityGraph,
        *,
        beta: np.ndarray,
        sigma: float,
        gamma: float,
        seed: int = 0,
        hosp_frac: float = 0.0,
        hosp_rate: float = 0.0,
    ) -> None:
        self.graph = graph
        self.inv_n = 1.0 / graph.population.astype(np.float64)
        self.beta = np.asarray(beta, np.float64)
        self.sigma, self.gamma = sigma, gamma
        self.hosp_frac, self.hosp_rate = hosp_frac, hosp_rate
        self.rng = np.random.default_rng(seed)

    def leap(
        self,
        S: np.ndarray,
        E: np.ndarray,
        I: np.ndarray,  # noqa: E741
        R: np.ndarray,
        contact: np.ndarray,
        travel: np.ndarray,
        vacc: np.ndarray,
        dt: float = 1.0,
        H: np.ndarray | None = None,
    ) -> np.ndarray:
        """One tau-leap of all cells [n, runs] in place (and H, the hospital compartment, when given);
        returns the onsets."""
        lam = self.beta[None, :] * force(*coupling(self.graph, travel), self.inv_n, I, contact)
        b = self.rng.binomial
        new_e = b(S, -np.expm1(-lam * dt))
        # no draw where nothing can happen (the native engine skips those cells the same way)
        new_v = b(S - new_e, -np.expm1(-vacc[:, None] * dt) * np.ones_like(lam)) if vacc.any() else 0
        new_i = b(E, self.sigma * dt)  # stage exits: rate * dt (csrc/metapop_cell.h, sojourn_leap)
        new_r = b(I, self.gamma * dt)
        S -= new_e + new_v
        E += new_e - new_i
        I += new_i - new_r  # noqa: E741
        if H is not None:
            new_h = b(new_r, self.hosp_frac)
            new_d = b(H, self.hosp_rate * dt)
            H += new_h - new_d
            new_r = new_r - new_h + new_d
        R += new_r + new_v
        return new_i


def solve_ode(
    graph: MobilityGraph,
    start: tuple[np.ndarray, ...],
    *,
    beta: float,
    sigma: float,
    gamma: float,
    days: int,
    contact: np.ndarray | None = None,
    travel: np.ndarray | None = None,
    vacc: np.ndarray | None = None,
    hosp_frac: float = 0.0,
    hosp_rate: float = 0.0,
) -> dict[str, np.ndarray]:
    """Integrate the ODE with LSODA (rtol 1e-10); returns S, E, I, R, H at days 0..days [days + 1, n]
    and the daily onsets [days, n]. Schedules [days, n] are piecewise constant per day; H (hospital
    occupancy, from 0) is fed by hosp_frac of the I -> out flow and empties at hosp_rate."""
    n = graph.n_regions
    inv_n = 1.0 / graph.population.astype(np.float64)
    ones = np.ones((days, n))
    contact = ones if contact is None else contact
    travel = ones if travel is None else travel
    vacc = np.zeros((days, n)) if vacc is None else vacc
    y = np.concatenate([np.asarray(c, np.float64) for c in start] + [np.zeros(n), np.zeros(n)])
    out = [y.copy()]
    for t in range(days):
        c, v = contact[t], vacc[t]
        a, home = coupling(graph, travel[t])

        def rhs(
            _: float, z: np.ndarray, c: np.ndarray = c, v: np.ndarray = v,
            a: scipy.sparse.csr_matrix = a, home: np.ndarray = home,
        ) -> np.ndarray:
            S, E, I, H = z[:n], z[n : 2 * n], z[2 * n : 3 * n], z[5 * n :]  # noqa: E741
            lam = beta * force(a, home, inv_n, I, c)
            admit, discharge = hosp_frac * gamma * I, hosp_rate * H
            return np.concatenate(
                [
                    -lam * S - v * S,
                    lam * S - sigma * E,
                    sigma * E - gamma * I,
                    gamma * I - admit + discharge + v * S,
                    sigma * E,
                    admit - discharge,
                ]
            )

        sol = scipy.integrate.solve_ivp(rhs, (0.0, 1.0), y, method="LSODA", rtol=1e-10, atol=1e-8)
        y = sol.y[:, -1]
        out.append(y.copy())
    traj = np.array(out)
    return {
        "S": traj[:, :n],
        "E": traj[:, n : 2 * n],
        "I": traj[:, 2 * n : 3 * n],
        "R": traj[:, 3 * n : 4 * n],
        "onsets": np.diff(traj[:, 4 * n : 5 * n], axis=0),
        "H": traj[:, 5 * n :],
    }


def memilio_ode(
    population: np.ndarray,
    start: tuple[np.ndarray, ...],
    *,
    beta: float,
    latent_days: float,
    infectious_days: float,
    days: int,
    dt: float = 0.1,
) -> dict[str, np.ndarray]:
    """The same SEIR in MEmilio's metapopulation ODE (``memilio.simulation.oseir_metapop``, a test/dev
    dependency) with identity commuting, i.e. the regions uncoupled: MEmilio couples regions through
    commuters who mix where they commute, which is not our force-of-infection coupling, so the two
    models coincide only without mobility. Returns daily S, E, I, R [days + 1, n]."""
    import memilio.simulation as mio
    import memilio.simulation.oseir_metapop as om

    n = len(population)
    model = om.Model(n, 1)
    age = mio.AgeGroup(0)
    par = model.parameters
    states = (
        om.InfectionState.Susceptible,
        om.InfectionState.Exposed,
        om.InfectionState.Infected,
        om.InfectionState.Recovered,
    )
    for r in range(n):
        reg = mio.Region(r)
        par.TimeExposed[reg, age] = latent_days
        par.TimeInfected[reg, age] = infectious_days
        par.TransmissionProbabilityOnContact[reg, age] = beta
        for state, values in zip(states, start, strict=True):
            model.populations[reg, age, state] = float(values[r])
    par.ContactPatterns.cont_freq_mat[0].baseline = np.ones((1, 1))
    model.set_commuting_strengths_identity()
    model.apply_constraints()
    result = om.interpolate_simulation_result(om.simulate(0.0, float(days), dt, model))
    arr = result.as_ndarray()[1:].T  # [times, n * 4]: per region S, E, I, R
    arr = arr[: days + 1].reshape(-1, n, 4)
    return {"S": arr[..., 0], "E": arr[..., 1], "I": arr[..., 2], "R": arr[..., 3]}

// map.js - the regions on a world map: the land outline comes from Natural Earth's 1:110m data
// (the world-atlas package, bundled), projected by d3-geo; each region is a dot coloured by the
// health of its deployments and sized by their load.
import { geoNaturalEarth1, geoPath } from 'd3-geo';
import { feature } from 'topojson-client';
import land110m from 'world-atlas/land-110m.json';
import { s, fill } from './dom.js';

const W = 960;
const H = 440;

let base = null; // the projection and the land path, computed once

function landLayer() {
	if (!base) {
		const land = feature(land110m, land110m.objects.land);
		const projection = geoNaturalEarth1().fitExtent([[8, 8], [W - 8, H - 8]], { type: 'Sphere' });
		const path = geoPath(projection);
		base = { projection, sphere: path({ type: 'Sphere' }), land: path(land) };
	}
	return base;
}

/* Draws regions ([{name, location: [lat, lon]}]) with their summary (name -> {state, load,
 * label}) into the svg element. */
export function drawMap(svg, regions, summary) {
	const { projection, sphere, land } = landLayer();
	svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
	const dots = [];
	const labels = [];
	for (const r of regions) {
		if (!Array.isArray(r.location) || r.location.length !== 2) continue;
		const xy = projection([r.location[1], r.location[0]]);
		if (!xy) continue;
		const sm = summary.get(r.name) || { state: 'idle', load: 0, label: 'no deployment' };
		const radius = 7 + Math.min(1, sm.load) * 10;
		dots.push(s('circle', { cx: xy[0].toFixed(1), cy: xy[1].toFixed(1), r: radius.toFixed(1), class: 'dot dot-' + sm.state },
			s('title', null, `${r.name}: ${sm.label}`)));
		labels.push(s('text', { x: (xy[0] + radius + 3).toFixed(1), y: (xy[1] + 4).toFixed(1), class: 'dot-label' }, r.name));
	}
	fill(svg,
		s('title', null, 'Regions on a world map'),
		s('path', { d: sphere, class: 'sphere' }),
		s('path', { d: land, class: 'land' }),
		dots, labels);
}

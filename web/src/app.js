// app.js - the dashboard's entry: three tabs (overview, regions, logs) chosen by the URL's hash
// (#/overview, #/regions, #/logs, #/logs/<request id>), each loading from /admin/api/.
import 'uplot/dist/uPlot.min.css';
import './app.css';
import { createOverview } from './overview.js';
import { createRegions } from './regions.js';
import { createLogs } from './logs.js';

const updated = document.getElementById('updated');
const status = (text) => { updated.textContent = text; };

const tabs = {
	overview: createOverview(document.getElementById('panel-overview'), status),
	regions: createRegions(document.getElementById('panel-regions'), status),
	logs: createLogs(document.getElementById('panel-logs'), status),
};
let current = null;

function route() {
	const m = location.hash.match(/^#\/(overview|regions|logs)(?:\/(.+))?$/);
	const name = m ? m[1] : 'overview';
	let arg = null;
	if (m && m[2]) {
		try {
			arg = decodeURIComponent(m[2]);
		} catch {
			arg = m[2];
		}
	}
	for (const [n, t] of Object.entries(tabs)) {
		const on = n === name;
		document.getElementById('panel-' + n).hidden = !on;
		const a = document.getElementById('tab-' + n);
		a.setAttribute('aria-selected', on ? 'true' : 'false');
		if (on) a.setAttribute('aria-current', 'page');
		else a.removeAttribute('aria-current');
		if (!on && current === n) t.hide();
	}
	current = name;
	tabs[name].show(arg);
}

window.addEventListener('hashchange', route);
route();
